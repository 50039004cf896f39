from segnas.cli.main import main

main()
