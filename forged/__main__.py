from forged.cli import main

main()
