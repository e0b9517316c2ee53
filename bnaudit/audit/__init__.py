"""The static audits, no TensorFlow: find BN layers (`trace`, `detect`), judge them (`health`),
list them (`listing`), pair them with a checkpoint (`match`), check folds (`fold`) and compare
values (`compare`)."""
