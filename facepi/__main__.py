from facepi.cli import main

raise SystemExit(main())
