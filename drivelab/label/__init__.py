"""Label app: browse, paint and review masks in the browser."""
