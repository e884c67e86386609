from perpcarry.cli.app import main

main()
