"""Stages 1-2: raw option chains from a source, validated, and their Greeks features."""
