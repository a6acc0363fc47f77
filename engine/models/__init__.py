"""The networks as data and code: one file per architecture family, the frozen specs and their
registry, the adapter (named taps, checkpoint key maps), weights loading, input preprocessing and
operation counts."""
