from .unpack import main

main()
