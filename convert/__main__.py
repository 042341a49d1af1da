from facepi_convert.cli import main

raise SystemExit(main())
