from maskclf.cli import main

raise SystemExit(main())
