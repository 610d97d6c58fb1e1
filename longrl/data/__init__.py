"""Prompt files and benchmark loaders."""
