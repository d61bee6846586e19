"""--hang-timeout: deciding from every rank's progress that the job hangs, and saying where each rank is. No torch."""
