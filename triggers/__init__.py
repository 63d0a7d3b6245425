"""Events -> decisions -> submissions: event readers, pure policies, the run
ledger, notifications and the local host that serves function_app."""
