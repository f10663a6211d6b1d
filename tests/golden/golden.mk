# Numeric golden regression (tests/golden/golden.py), included by tests/tests.mk.
#   make golden-check    every spec but the 224x224 ones (vgg16, resnet18): 5 fixed SGD steps vs tests/golden/NAME.json
#   make golden-update   rewrite the json files (review the diff before committing)
GOLDEN_SPECS := $(filter-out $(BIG_SPECS),$(SPECS))
.PHONY: golden-check golden-update
golden-check: $(TRAINERS)
	@fail=0; for s in $(GOLDEN_SPECS); do n=$$(basename $$s .yaml); \
	  $(PYTHON) tests/golden/golden.py check $$s $(B)/trainers/$$n $(B)/golden || fail=$$((fail+1)); done; \
	  if [ $$fail = 0 ]; then echo "golden-check: $(words $(GOLDEN_SPECS)) specs match tests/golden/"; \
	  else echo "golden-check: $$fail specs FAILED (if the change is intended: make golden-update, review, commit)"; exit 1; fi
golden-update: $(TRAINERS)
	@for s in $(GOLDEN_SPECS); do n=$$(basename $$s .yaml); \
	  $(PYTHON) tests/golden/golden.py update $$s $(B)/trainers/$$n $(B)/golden || exit 1; done
