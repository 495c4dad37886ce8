"""The training assets: thin wrappers that export inputs, launch a child, collect its report."""
