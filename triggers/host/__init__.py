"""The local Functions host behind `aml-trigger serve`: it reads the functions
registered on function_app's `app` and serves them as the Azure host would (HTTP
with keys, NCRONTAB timers with a schedule monitor, a blob trigger with receipts
and poison records). It imports nothing of function_app but the app object."""
