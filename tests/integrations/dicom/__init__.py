# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
