package console

import "net/http"

func (c *Console) analyticsRoutes(m *http.ServeMux) {}
