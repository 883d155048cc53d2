from codistill.run import main

main()
