"""Developer tools: the offline Stripe used by `make demo` and the tests."""
