from listener.cli import listener_main

raise SystemExit(listener_main())
