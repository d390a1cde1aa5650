"""The compiled read path: see `extension`."""
