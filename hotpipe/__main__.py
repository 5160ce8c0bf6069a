from hotpipe.cli import main

main()
