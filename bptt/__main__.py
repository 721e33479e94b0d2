from bptt.cli import main

main()
