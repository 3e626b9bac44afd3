"""The tuning service: REST API, scheduler, dashboard, settings, CLI and client."""
