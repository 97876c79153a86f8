from heliox_orchestration.cli import main

main()
