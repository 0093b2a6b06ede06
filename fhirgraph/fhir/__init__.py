"""FHIR REST access: the HTTP client, authentication and the search builder."""
