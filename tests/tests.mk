# Test rules (filled in by the tests work; placeholder so the Makefile's include succeeds).
