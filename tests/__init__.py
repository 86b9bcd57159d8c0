"""The project's tests, one package: `tests.support` holds what several test modules share."""
