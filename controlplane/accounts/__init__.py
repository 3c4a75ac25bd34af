"""Who may do what, and what they did: roles, API tokens and the audit trail."""
