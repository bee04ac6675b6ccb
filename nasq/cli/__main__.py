from nasq.cli.app import main

main()
