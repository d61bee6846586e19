from dsrun.cli import main

main()
