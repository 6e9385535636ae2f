"""The step kit, the ground floor: the train state, optimizers and data-parallel wrapping."""
