"""Data in and out: photos, labels, dataset trees, the synthetic set, mask files."""
