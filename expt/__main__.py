from expt.cli import main

main()
