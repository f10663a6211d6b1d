/* Runs every Check suite of the project. Add new suites to the list below. */
#include <check.h>
#include <stdlib.h>

Suite *make_runtime_suite(void);
Suite *make_layers_suite(void);
Suite *make_compiler_suite(void);
Suite *make_train_suite(void);
Suite *make_faults_suite(void);
Suite *make_comm_suite(void);
Suite *make_team_suite(void);

int main(void)
{
    SRunner *sr = srunner_create(make_runtime_suite());
    srunner_add_suite(sr, make_layers_suite());
    srunner_add_suite(sr, make_compiler_suite());
    srunner_add_suite(sr, make_train_suite());
    srunner_add_suite(sr, make_faults_suite());
    srunner_add_suite(sr, make_comm_suite());
    srunner_add_suite(sr, make_team_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
