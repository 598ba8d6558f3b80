from fedsignal_cli.main import main

raise SystemExit(main())
