module github.com/embeddedum/um/sipmwi

go 1.24

replace github.com/embeddedum/um => ../
