"""Disaster recovery: failover, failback and drills, for one mirror at a time. Above the
services (it reads the mirrors and the RPO through them); the API and the CLI call it."""
