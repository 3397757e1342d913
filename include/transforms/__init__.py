"""The transforms of the example DAGs, one module per demo dataset."""
