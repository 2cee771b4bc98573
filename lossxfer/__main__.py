from lossxfer.cli import main

main()
