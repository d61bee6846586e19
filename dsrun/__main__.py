from dsrun.launcher.cli import main

main()
