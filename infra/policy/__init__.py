"""The stack's security policy pack: pure rules plus their pulumi-policy wiring."""
