from tcpdispatch.cli import main

raise SystemExit(main())
