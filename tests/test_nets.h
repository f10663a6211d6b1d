/* The generated test nets (the specs in tests/nets/), registered by tests/tests.mk in
 * build/tnets/registry.c, and their lookup by name for the Check suites. */
#ifndef CNNGEN_TEST_NETS_H
#define CNNGEN_TEST_NETS_H

#include <string.h>
#include <check.h>
#include "cnngen.h"

extern const cg_net *const cg_test_nets[]; /* NULL-terminated */

/* the registered net called name; aborts the running test if there is none */
static inline const cg_net *test_net(const char *name)
{
    for (int i = 0; cg_test_nets[i]; i++)
        if (!strcmp(cg_test_nets[i]->name, name))
            return cg_test_nets[i];
    ck_abort_msg("test net %s not in the registry", name);
    return NULL;
}

#endif
