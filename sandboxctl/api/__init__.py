"""The HTTP edge: REST and RAGFlow views, request validation and limits, auth, errors, health and metrics."""
