from nbsched.cli import main

main()
