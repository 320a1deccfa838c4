package console

import "net/http"

func (c *Console) privacyRoutes(m *http.ServeMux) {}
