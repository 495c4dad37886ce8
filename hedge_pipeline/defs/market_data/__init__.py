"""Raw chains, Greeks features, their checks, and the new-data sensor."""
