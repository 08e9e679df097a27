"""What every layer uses: user errors, metric declarations, seeds, package-data paths."""
