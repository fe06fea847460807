from bench.continuity.run import main

raise SystemExit(main())
