"""Processing scripts Forge writes from templates and the stdlib-only rules they carry."""
