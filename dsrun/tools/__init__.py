"""Commands that work on a run's files after (or while) it trains: `dsrun plot`. No torch here."""
