package console

import "net/http"

func (c *Console) tenantRoutes(m *http.ServeMux) {}
