from tapewire.cli import main

main()
