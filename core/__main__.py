from perpcarry.cli import main

main()
