"""The AWS side: the run manifest and submit, the start of a cloud run, Lambda events, deploy, status."""
