"""Process-level helpers every layer uses: data-directory paths, profiles, cores, file locks,
dataset export, orphan handling and markdown rendering. No Dagster, no torch.
"""
